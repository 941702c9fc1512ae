"""The ``cgan`` command line. Torch and the plugins load only inside commands that need them."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from cgan_kit import __version__
from cgan_kit.errors import CganError

SET_HELP = "Override a recipe value, e.g. --set train.steps=100 (repeatable)."


class CganGroup(click.Group):
    """A group that reports user errors as one line (exit 2) and finds plugin commands on demand."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and not getattr(self, "_plugin_commands_added", False):
            # Loading plugins imports their modules (and torch), so do it only for a name we
            # do not know: `cgan --help` and the built-in commands stay fast.
            self._plugin_commands_added = True
            from cgan_kit import plugins

            plugins.load().manager.hook.register_commands(cli=self)
            command = super().get_command(ctx, name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CganError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            for line in str(error).splitlines() or ["error"]:
                click.echo(f"error: {line}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=CganGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Plugins can add commands; `cgan plugins` lists them.")
@click.version_option(__version__, prog_name="cgan-kit")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """cgan-kit: conditional GANs composed from plugins and TOML recipes."""
    ctx.ensure_object(dict)["debug"] = debug


def _registry():
    from cgan_kit import plugins

    return plugins.registry()


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _console():
    from rich.console import Console

    return Console()


def _default_text(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return json.dumps(value)


def _param_json(param) -> dict[str, Any]:
    return {
        "name": param.name,
        "type": param.type_name,
        "required": param.required,
        "default": None if param.required else (list(param.default) if isinstance(param.default, tuple)
                                                else param.default),
        "doc": param.doc,
    }


def _entry_json(entry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "summary": entry.summary,
        "distribution": entry.provider.distribution,
        "version": entry.provider.version,
        "plugin": entry.provider.plugin,
        "parameters": [_param_json(p) for p in entry.params],
        "context": [p.name for p in entry.context],
    }


@cli.command("list")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def list_command(kind: str | None, as_json: bool) -> None:
    """List registered components (all kinds, or one KIND such as norms)."""
    from cgan_kit.registry import KINDS, kind_named

    kinds = [kind_named(kind)] if kind else list(KINDS.values())
    registry = _registry()
    if as_json:
        _echo_json({k.plural: [_entry_json(registry.get(k.name, n)) for n in registry.names(k.name)]
                    for k in kinds})
        return
    from rich.table import Table

    console = _console()
    for k in kinds:
        table = Table(title=k.plural, title_justify="left", expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("summary")
        table.add_column("package", style="dim", no_wrap=True)
        for name in registry.names(k.name):
            entry = registry.get(k.name, name)
            table.add_row(name, entry.summary, f"{entry.provider.distribution} {entry.provider.version}")
        console.print(table)
    console.print("[dim]Details: cgan describe KIND NAME[/dim]")


@cli.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(kind: str, name: str | None, as_json: bool) -> None:
    """Show a component's parameters, defaults and docs: KIND NAME, or `train` / `optim` alone."""
    from cgan_kit.params import params_of, parse_docstring
    from cgan_kit.recipe import SETTINGS_TABLES
    from cgan_kit.registry import kind_named

    if kind in SETTINGS_TABLES:
        cls = SETTINGS_TABLES[kind]
        summary, description, _ = parse_docstring(cls.__doc__)
        params, context, provider = params_of(cls), [], f"cgan-kit {__version__} (engine)"
        title = f"[{kind}]"
    else:
        kind_ = kind_named(kind)
        if name is None:
            raise CganError(f"cgan describe {kind} needs a NAME (see `cgan list {kind_.plural}`)")
        entry = _registry().get(kind_.name, name)
        summary, description = entry.summary, entry.description
        params, context, provider = list(entry.params), list(entry.context), str(entry.provider)
        title = f"{entry.kind} {entry.name}"
        if as_json:
            _echo_json({"kind": entry.kind, **_entry_json(entry), "description": description})
            return
    if as_json:
        _echo_json({"kind": "settings", "name": kind, "summary": summary, "description": description,
                    "parameters": [_param_json(p) for p in params]})
        return
    from rich.table import Table

    from rich.markup import escape

    console = _console()
    console.print(f"[bold]{escape(title)}[/bold]: {escape(summary)}")
    if description:
        console.print(description, markup=False)
    console.print(f"[dim]from {provider}[/dim]")
    table = Table(expand=False)
    for column in ("parameter", "type", "default", "description"):
        table.add_column(column)
    for param in params:
        table.add_row(param.name, param.type_name, _default_text(param), param.doc)
    console.print(table)
    if context:
        console.print(f"[dim]Set by cgan-kit: {', '.join(p.name for p in context)}[/dim]")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins with their versions and hooks, and those that failed to load."""
    from cgan_kit import plugins

    loaded = plugins.load()
    commands = _plugin_commands(loaded)
    data = {
        "loaded": [{**_info_json(p), "hooks": list(p.hooks), "commands": commands.get(p.name, [])}
                   for p in loaded.loaded],
        "failed": [{**_info_json(p), "error": p.error} for p in loaded.failed],
        "disabled": loaded.disabled,
    }
    if as_json:
        _echo_json(data)
        return
    from rich.table import Table

    console = _console()
    table = Table(title="plugins", title_justify="left")
    for column in ("plugin", "package", "module", "hooks"):
        table.add_column(column)
    for p in data["loaded"]:
        hooks = ", ".join(p["hooks"] + [f"command {c}" for c in p["commands"]])
        table.add_row(p["name"], f"{p['distribution']} {p['version']}", p["module"], hooks)
    console.print(table)
    for p in data["failed"]:
        console.print(f"[red]failed[/red] {p['name']} ({p['distribution']} {p['version']}): {p['error']}",
                      markup=True, highlight=False)
    for name in data["disabled"]:
        console.print(f"[yellow]disabled[/yellow] {name} (CGAN_DISABLE_PLUGINS)")


def _info_json(p) -> dict[str, Any]:
    return {"name": p.name, "distribution": p.distribution, "version": p.version, "module": p.module}


def _plugin_commands(loaded) -> dict[str, list[str]]:
    """Which plugin added which subcommand: run each register_commands hook on a scratch group."""
    found: dict[str, list[str]] = {}
    for impl in loaded.manager.hook.register_commands.get_hookimpls():
        scratch = click.Group()
        impl.function(cli=scratch)
        found[impl.plugin_name] = sorted(scratch.commands)
    return found


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--size", type=int, default=None,
              help="Image side for the critic's output size (default: the dataset's crop_size or size, else 256).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def check(recipe: str, overrides: tuple[str, ...], size: int | None, as_json: bool) -> None:
    """Validate RECIPE and build every model without training."""
    from cgan_kit.check import summarize

    report = summarize(recipe, list(overrides), size)
    size = report["size"]
    if as_json:
        _echo_json(report)
        return
    console = _console()
    console.print(f"[green]ok[/green] {recipe}")
    for role in ("generator", "critic"):
        part = report[role]
        extra = ""
        if role == "critic":
            if part.get("receptive_field") is not None:
                extra += f", receptive field {part['receptive_field']} px"
            extra += f", output {part['output_shape'][-2]}x{part['output_shape'][-1]} on {size}x{size}"
        console.print(f"  {role:<10} {part['type']:<12} {part['parameters']:>12,} parameters{extra}")
    for loss in report["losses"]:
        console.print(f"  loss       {loss['type']:<12} weight {loss['weight']:g} ({loss['role']})")
    for stabilizer in report["stabilizers"]:
        console.print(f"  stabilizer {stabilizer['type']}")
    data = report["data"]
    splits = ", ".join(f"{count} {split}" for split, count in data["splits"].items())
    console.print(f"  data       {data['type']:<12} {splits or 'not readable'}", markup=False)
    for problem in data["problems"]:  # the models are fine; the data can still be fetched later
        click.echo(f"warning: {problem}", err=True)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="Continue the run in this folder.")
@click.option("--until", type=click.IntRange(min=1), default=None, metavar="STEP",
              help="Stop after STEP (with a checkpoint) without changing the schedules, which still span "
                   "train.steps; continue later with --resume. For time-limited jobs.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train with N processes on this machine through torchrun's own launcher (one per GPU; "
                   "gloo on CPUs); the same as `torchrun --standalone --nproc-per-node N -m cgan_kit run ...`. "
                   "train.batch_size is per process.")
def run(recipe: str | None, overrides: tuple[str, ...], resume: str | None, until: int | None,
        nproc: int | None) -> None:
    """Train RECIPE (or continue a run with --resume RUN_DIR)."""
    if recipe is None and resume is None:
        raise CganError("cgan run needs a RECIPE or --resume RUN_DIR (try recipes/quickstart.toml)")
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from torch.distributed.run import main as torchrun

        args = [*([recipe] if recipe else []), *(a for o in overrides for a in ("--set", o)),
                *(["--resume", resume] if resume else []), *(["--until", str(until)] if until else [])]
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        try:
            torchrun(["--standalone", "--nproc-per-node", str(nproc), "-m", "cgan_kit", "run", *args])
        except ChildFailedError as error:  # each process has printed its own one-line error above
            codes = ", ".join(f"rank {rank} exit code {failure.exitcode}" for rank, failure in error.failures.items())
            raise CganError(f"distributed training with {nproc} processes failed ({codes}); see the errors above")
        return
    from cgan_kit.train import train

    train(recipe, list(overrides), resume, until)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed steps (after as many warm-up steps) for each loop.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench(recipe: str, overrides: tuple[str, ...], steps: int, as_json: bool) -> None:
    """Time `cgan run` on RECIPE against a bare PyTorch loop on the same nets and data."""
    from cgan_kit.bench import bench as measure

    report = measure(recipe, list(overrides), steps)
    if as_json:
        _echo_json(report)
        return
    from rich.table import Table

    table = Table(title=f"{recipe} on {report['device']} ({report['device_name']}, {report['threads']} threads, "
                        f"{report['precision']}, batch {report['batch_size']})")
    for column in ("loop", "ms per step", "images/s"):
        table.add_column(column)
    table.add_row("bare PyTorch", f"{report['bare_ms_per_step']:.1f}", f"{report['bare_images_per_s']:.2f}")
    table.add_row("cgan run", f"{report['ms_per_step']:.1f}", f"{report['images_per_s']:.2f}")
    _console().print(table)
    click.echo(f"cgan run / bare: {report['bare_ratio']:.3f}; peak memory {report['peak_memory_mb']:.0f} MB")


def main() -> None:
    """Entry point of the ``cgan`` console script."""
    try:
        cli(prog_name="cgan")
    except CganError as error:  # only reached with --debug: the traceback has been asked for
        traceback.print_exc()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception:  # a bug, not a user error: show everything so it can be reported
        traceback.print_exc()
        sys.exit(1)
